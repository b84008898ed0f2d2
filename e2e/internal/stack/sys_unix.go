//go:build unix

package stack

import (
	"os"
	"syscall"
)

func signalGroup(p *os.Process, sig syscall.Signal) {
	// The negative pid addresses the whole process group, so a service's own children go too.
	if err := syscall.Kill(-p.Pid, sig); err != nil {
		_ = p.Signal(sig)
	}
}
