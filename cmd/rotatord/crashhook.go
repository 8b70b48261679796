//go:build !crashtest

package main

import "log/slog"

// crashHook is nil in the release build: no environment variable can make
// the shipped binary kill itself. The crash tests build with -tags
// crashtest to get the hook (crashhook_crashtest.go).
func crashHook(*slog.Logger) func(string) { return nil }
