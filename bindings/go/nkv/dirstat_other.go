//go:build !unix

package nkv

import "errors"

var errNoUnix = errors.New("the socket directory check needs a Unix system")

func statNoFollow(string) (dirStat, error) { return dirStat{}, errNoUnix }
func statFollow(string) (dirStat, error)   { return dirStat{}, errNoUnix }
