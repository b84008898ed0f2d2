//go:build !linux

package main

import "syscall"

// Elsewhere the services share the benchmark's process group; it still stops them itself on Ctrl-C.
func childProcAttr() *syscall.SysProcAttr { return nil }
