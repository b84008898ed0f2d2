// Package load builds report submissions and sends them to epro-api, recording every answer: a plan of
// patients whose reports go one after the other (with re-sends of earlier request ids), and an open or
// closed loop of fresh reports for measuring throughput.
package load

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/e2e/internal/stack"
)

// Marker stands for patient data: it must never show up in a header or a log written for a report.
const Marker = "PHI-MARKER-answer-text"

// AppendBody appends a valid submission. Devices report submittedAt in their own offset, which the consumer
// must keep; answers is a JSON object.
func AppendBody(b []byte, requestID, patientID string, submittedAt time.Time, answers []byte) []byte {
	b = append(b, `{"requestId":"`...)
	b = append(b, requestID...)
	b = append(b, `","patientId":"`...)
	b = append(b, patientID...)
	b = append(b, `","trialId":"TRIAL-EPRO-01","questionnaireId":"EPRO-DAILY-SYMPTOMS","questionnaireVersion":"3.2","submittedAt":"`...)
	b = submittedAt.In(cet).Truncate(time.Second).AppendFormat(b, time.RFC3339)
	b = append(b, `","answers":`...)
	b = append(b, answers...)
	b = append(b, `,"deviceId":"ios-`...)
	b = append(b, patientID...)
	b = append(b, `-iphone14","appVersion":"2.7.1","locale":"en-GB"}`...)
	return b
}

var cet = time.FixedZone("", 60*60)

// notes are fragments of the free-text field; patients write a sentence or three, so a report carries a few
// hundred bytes of prose with quotes and non-ASCII letters that the strict JSON check has to walk through.
var notes = []string{
	"Slept badly, woke up twice with a headache.",
	"Mild nausea after the morning dose, gone by lunch.",
	"Walked 30 minutes with the dog, knees were fine.",
	"Felt \"foggy\" most of the afternoon; skipped the gym.",
	"Appetite back to normal, ate a full dinner.",
	"Übelkeit am Abend, sonst ein guter Tag.",
	"Pain in the lower back 4/10 after gardening.",
	"Forgot the evening tablet, took it at 23:10 instead.",
	"Tired but in a good mood; visited my daughter.",
	"Rash on the left forearm is fading.",
	"Très fatigué après le travail, mais pas de douleur.",
	"Shortness of breath on the stairs, less than last week.",
}

var symptoms = []string{"headache", "fatigue", "nausea", "dizziness", "insomnia", "rash", "cough", "none"}

// AnswerSet is a pool of answer objects built once, so that generating a request costs a few appends rather
// than a JSON encoding on a machine whose two cores the services need.
type AnswerSet [][]byte

// NewAnswerSet builds n answer objects of a daily symptom questionnaire.
func NewAnswerSet(n int, rng *mrand.Rand) AnswerSet {
	set := make(AnswerSet, n)
	for i := range set {
		var b strings.Builder
		b.WriteByte('{')
		for q := 1; q <= 24; q++ {
			fmt.Fprintf(&b, `"q%02d":%d,`, q, rng.IntN(5)+1)
		}
		fmt.Fprintf(&b, `"painNrs":%d,"sleepHours":%.1f,"medsTaken":%t,"stepsToday":%d,`,
			rng.IntN(11), 3+rng.Float64()*6, rng.IntN(4) != 0, rng.IntN(15000))
		b.WriteString(`"symptoms":[`)
		for k, n := 0, 1+rng.IntN(3); k < n; k++ {
			if k > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(symptoms[rng.IntN(len(symptoms))]))
		}
		b.WriteString(`],"note":`)
		var note strings.Builder
		for note.Len() < 380 {
			if note.Len() > 0 {
				note.WriteByte(' ')
			}
			note.WriteString(notes[rng.IntN(len(notes))])
		}
		// strconv.Quote would escape the non-ASCII letters as \u sequences; JSON takes them as they are.
		b.WriteString(`"` + strings.ReplaceAll(note.String(), `"`, `\"`) + `"`)
		b.WriteByte('}')
		set[i] = []byte(b.String())
	}
	return set
}

// Generator builds fresh reports of random patients. It is not safe for concurrent use.
type Generator struct {
	answers  AnswerSet
	patients int
	rng      *mrand.Rand
	buf      []byte
}

// NewGenerator returns a generator over patients patients, seeded from crypto/rand.
func NewGenerator(answers AnswerSet, patients int) *Generator {
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return &Generator{answers: answers, patients: patients, rng: mrand.New(mrand.NewChaCha8(seed))}
}

// Next returns a fresh report of a random patient. The body aliases the generator's buffer and is valid
// until the next call.
func (g *Generator) Next(now time.Time) (s Send, patientID string) {
	var u [16]byte
	binary.LittleEndian.PutUint64(u[0:8], g.rng.Uint64())
	binary.LittleEndian.PutUint64(u[8:16], g.rng.Uint64())
	id := stack.FormatUUID(u)
	patientID = fmt.Sprintf("PAT-%06d", g.rng.IntN(g.patients))
	g.buf = AppendBody(g.buf[:0], id, patientID, now, g.answers[g.rng.IntN(len(g.answers))])
	return Send{RequestID: id, Body: g.buf}, patientID
}

// Fresh is a Source of fresh reports that never runs dry: each worker has a generator of its own.
type Fresh struct {
	Answers  AnswerSet
	Patients int
}

// Worker implements Source.
func (f Fresh) Worker(int, int) func(time.Time) (Send, string, bool) {
	g := NewGenerator(f.Answers, f.Patients)
	return func(now time.Time) (Send, string, bool) {
		s, patient := g.Next(now)
		return s, patient, true
	}
}

// CheckGenerated parses and validates a sample with the API's own rules, so a contract change fails a
// benchmark at start instead of turning the whole run into 400s. It returns the mean body size.
func CheckGenerated(answers AnswerSet, patients int) (size int, err error) {
	g := NewGenerator(answers, patients)
	now := time.Now()
	for range 32 {
		s, _ := g.Next(now)
		sub, err := report.ParseSubmission(s.Body)
		if err != nil {
			return 0, fmt.Errorf("generated report does not parse: %w", err)
		}
		if err := sub.Validate(now, report.Limits{MaxAge: time.Hour, MaxSkew: time.Minute}); err != nil {
			return 0, fmt.Errorf("generated report is invalid: %w", err)
		}
		size += len(s.Body)
	}
	return size / 32, nil
}
