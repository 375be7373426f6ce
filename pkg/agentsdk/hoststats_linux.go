package agentsdk

import "syscall"

func init() { hostDiskUsage = statfsUsage }

// statfsUsage reports the size, free and available bytes of the file system
// holding path (statfs(2)).
func statfsUsage(path string) (blocks, free, avail uint64, ok bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, 0, false
	}
	bs := uint64(st.Bsize)
	return st.Blocks * bs, st.Bfree * bs, st.Bavail * bs, true
}
