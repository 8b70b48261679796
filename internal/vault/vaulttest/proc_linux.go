package vaulttest

import "syscall"

// sysProcAttr asks the kernel to kill the dev server when the test process
// dies (a panic, a SIGKILL from `go test -timeout`), which t.Cleanup cannot.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
