package heapkv

// opGate holds the file operations a test's hook picks, one at a time:
// hold tells the test (reached) and waits for release. Once the test ends
// (open), nothing is held any more, so that Close cannot block on a
// held write or flush.
type opGate struct {
	reached chan struct{} // an op is held
	release chan struct{} // let the held op run
	stop    chan struct{} // closed by open
}

func newOpGate() *opGate {
	return &opGate{reached: make(chan struct{}), release: make(chan struct{}), stop: make(chan struct{})}
}

// hold is called by the hook for an op the test wants to hold.
func (g *opGate) hold() {
	select {
	case g.reached <- struct{}{}:
	case <-g.stop:
		return
	}
	select {
	case <-g.release:
	case <-g.stop:
	}
}

// open lets every held and later op through. Tests register it with
// t.Cleanup after opening the database, so that it runs before Close
// (cleanups run last first).
func (g *opGate) open() { close(g.stop) }

// putAsync runs db.Put(key, value) on a goroutine of its own and returns
// the channel its result comes on.
func putAsync(db *DB, key, value []byte) chan error {
	ch := make(chan error, 1)
	go func() { ch <- db.Put(key, value) }()
	return ch
}
