//go:build !unix

package infratest

import "time"

// ProcessCPU is not measured here.
func ProcessCPU() (d time.Duration, ok bool) { return 0, false }
