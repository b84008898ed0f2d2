//go:build !unix

package main

import "syscall"

// Elsewhere the children share the console's signals; the suite is developed and run on Linux and macOS.
func childProcAttr() *syscall.SysProcAttr { return nil }
