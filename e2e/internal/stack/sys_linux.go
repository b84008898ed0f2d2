package stack

import (
	"os"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid: true,
		// A parent killed outright (go test -timeout, SIGKILL, OOM) must not leave services running, holding
		// ports and consuming. SIGKILL rather than SIGTERM: the services are built to survive kill -9, and a
		// child whose embedded servers died with the parent could only hang in a graceful stop.
		Pdeathsig: syscall.SIGKILL,
	}
}

func signalGroup(p *os.Process, sig syscall.Signal) {
	// The negative pid addresses the whole process group, so a service's own children go too.
	if err := syscall.Kill(-p.Pid, sig); err != nil {
		_ = p.Signal(sig)
	}
}
