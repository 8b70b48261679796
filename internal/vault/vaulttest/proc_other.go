//go:build !linux

package vaulttest

import "syscall"

// sysProcAttr has nothing to add where the kernel offers no parent-death
// signal; Stop and Ctrl-C still end the server.
func sysProcAttr() *syscall.SysProcAttr { return nil }
