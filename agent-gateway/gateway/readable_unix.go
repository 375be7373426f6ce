//go:build linux || darwin || freebsd

package gateway

import (
	"syscall"
	"unsafe"
)

// canPeek says readable works here.
const canPeek = true

// readable is syscall.RawConn.Read's callback for a session waiting for its
// next frame: true (done waiting) once the socket has data, or an end or an
// error for the read to report; it takes nothing from the socket.
func readable(fd uintptr) bool {
	var b [1]byte
	// The raw call because syscall.Recvfrom allocates its address buffer on
	// every wait; the pointer is to b, which outlives the call.
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0) //nolint:gosec // G103: audited above
	return errno != syscall.EAGAIN && errno != syscall.EWOULDBLOCK
}
