//go:build unix

package infratest

import (
	"syscall"
	"time"
)

// ProcessCPU is the CPU time this process has used, user and system, all threads: a benchmark's cost that
// other processes on a busy machine do not inflate, as they inflate its wall time. ok is false where it
// cannot be measured.
func ProcessCPU() (d time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
