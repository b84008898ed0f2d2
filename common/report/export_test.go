package report

// ContentHashFirstVersion is ContentHash as first written, for benchmarks outside the package.
var ContentHashFirstVersion = contentHashOracle

// FastSubmission, SlowSubmission, FastEnvelope and SlowEnvelope are the two parses behind ParseSubmission
// and ParseEnvelope, for the test that holds them to agree.
var (
	FastSubmission = fastSubmission
	Special8       = special8
	FastEnvelope   = fastEnvelope
	SlowEnvelope   = parseEnvelopeSlow
)

func SlowSubmission(data []byte) (Submission, error) {
	var s Submission
	err := decodeStrict(data, submissionFields, 0, &s, "report fields have the wrong types")
	return s, err
}
