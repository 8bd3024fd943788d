package cluster

import "time"

// PauseForTest makes n's member table look as a pause of d (SIGSTOP)
// leaves it: its heartbeat loop last ran d ago, and every heartbeat it
// heard is d older.
func PauseForTest(n *Node, d time.Duration) {
	m := n.members
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ran = m.ran.Add(-d)
	m.awake = m.awake.Add(-d)
	for _, mb := range m.byName {
		mb.LastSeen = mb.LastSeen.Add(-d)
	}
}
