//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package mirror

import "errors"

var errNoMmap = errors.New("memory maps are not supported on this platform")

func mmapFile(uintptr, int) ([]byte, error) { return nil, errNoMmap }

func munmapFile([]byte) error { return nil }
