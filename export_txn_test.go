package heapkv

// SetMaxTrackedKeys lowers the conflict tracker's bound on remembered keys
// for a test; the returned func restores it.
func SetMaxTrackedKeys(n int) (restore func()) {
	old := maxTrackedKeys
	maxTrackedKeys = n
	return func() { maxTrackedKeys = old }
}
