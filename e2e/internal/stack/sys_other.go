//go:build !unix

package stack

import (
	"os"
	"syscall"
)

// Elsewhere the children share the console's signals and are signalled one by one.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(p *os.Process, sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		_ = p.Kill()
		return
	}
	_ = p.Signal(sig)
}
