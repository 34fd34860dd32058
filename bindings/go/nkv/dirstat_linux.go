//go:build linux

package nkv

import "syscall"

// oPath is Linux's O_PATH (absent from package syscall) on every
// architecture Go supports on Linux.
const oPath = 0x200000

// statNoFollow judges a directory without following a symbolic link, the
// way protocol.md section 1 asks: open with O_PATH | O_DIRECTORY |
// O_NOFOLLOW, then fstat that descriptor.
func statNoFollow(dir string) (dirStat, error) {
	fd, err := syscall.Open(dir, oPath|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return dirStat{}, err
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
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
