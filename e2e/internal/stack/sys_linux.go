package stack

import "syscall"

func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid: true,
		// A parent killed outright (go test -timeout, SIGKILL, OOM) must not leave services running, holding
		// ports and consuming. SIGKILL rather than SIGTERM: the services are built to survive kill -9, and a
		// child whose embedded servers died with the parent could only hang in a graceful stop.
		Pdeathsig: syscall.SIGKILL,
	}
}
