//go:build crashtest

package main

import (
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"
)

// crashHook is built only into the crash tests' binary (go build -tags
// crashtest): ROTATORD_TEST_CRASH_AT=POINT makes the process SIGKILL
// itself the first time the engine reaches POINT (e.g. "after:upload",
// "journal:uploaded"), a real kill at an exact step boundary. The release
// binary has no such hook (crashhook.go) and ignores the variable.
func crashHook(log *slog.Logger) func(string) {
	at := os.Getenv("ROTATORD_TEST_CRASH_AT")
	if at == "" {
		return nil
	}
	points := strings.Split(at, ",")
	return func(point string) {
		for _, p := range points {
			if p == point {
				log.Warn("test crash point reached: SIGKILL", "point", point)
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Hour) // the kill lands before this returns
			}
		}
	}
}
