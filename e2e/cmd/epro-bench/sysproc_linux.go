package main

import "syscall"

func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		// Ctrl-C goes to the benchmark alone, which then stops the services in order.
		Setpgid: true,
		// A benchmark killed outright must not leave services holding ports and consuming.
		Pdeathsig: syscall.SIGTERM,
	}
}
