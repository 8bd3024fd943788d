//go:build !linux

package broker

// parker is Linux-only (epoll); elsewhere every connection keeps its
// reader goroutine.
type parker struct{}

func (p *parker) init()             {}
func (p *parker) park(*client) bool { return false }
func (p *parker) unpark(*client)    {}
func (p *parker) stop()             {}
