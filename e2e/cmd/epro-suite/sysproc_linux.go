package main

import "syscall"

func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid: true,
		// If the suite itself is killed (SIGKILL, OOM) the children must not live on holding the ports;
		// SIGTERM still lets them shut down properly.
		Pdeathsig: syscall.SIGTERM,
	}
}
