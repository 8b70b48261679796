//go:build !cpuprofile

package main

import "io"

// startCPUProfile does nothing in the release build. The benchmark's binary
// (go build -tags cpuprofile, cpuprofile_on.go) writes a CPU profile where
// ROTATORD_CPUPROFILE says.
func startCPUProfile(io.Writer) (stop func()) { return func() {} }
