//go:build unix && !linux

package nkv

import "syscall"

// statNoFollow judges a directory without following a symbolic link
// (lstat: O_PATH is Linux-only).
func statNoFollow(dir string) (dirStat, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return dirStat{}, err
	}
	return toDirStat(&st), nil
}

func statFollow(dir string) (dirStat, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return dirStat{}, err
	}
	return toDirStat(&st), nil
}

func toDirStat(st *syscall.Stat_t) dirStat {
	return dirStat{
		isDir: st.Mode&syscall.S_IFMT == syscall.S_IFDIR,
		uid:   st.Uid,
		mode:  uint32(st.Mode) & 0o7777,
	}
}
