package report

// ContentHashFirstVersion is ContentHash as first written, for benchmarks outside the package.
var ContentHashFirstVersion = contentHashOracle
