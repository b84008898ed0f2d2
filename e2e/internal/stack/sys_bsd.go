//go:build unix && !linux

package stack

import "syscall"

// Without Pdeathsig a killed parent leaves its children behind; the suite is developed on Linux and macOS
// and the e2e tests that depend on it run on Linux only.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
