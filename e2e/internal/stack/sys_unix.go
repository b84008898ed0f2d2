//go:build unix && !linux

package stack

import (
	"os"
	"syscall"
)

// Without Pdeathsig a killed parent leaves its children behind; the suite is developed on Linux and macOS
// and the e2e tests that depend on it run on Linux only.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func signalGroup(p *os.Process, sig syscall.Signal) {
	if err := syscall.Kill(-p.Pid, sig); err != nil {
		_ = p.Signal(sig)
	}
}
