package runner

import "syscall"

// blockDevice returns the MAJOR:MINOR of the device holding dir.
func blockDevice(dir string) (string, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return "", false
	}
	return devName(uint64(st.Dev)), true // Dev is a uint32 on some platforms
}

// syncAll is sync(2): every file system's dirty data goes to its device.
func syncAll() { syscall.Sync() }
