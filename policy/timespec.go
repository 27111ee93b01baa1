package policy

import (
	"fmt"
	"strings"
	"time"
)

var timeLayouts = []string{
	"2006-01-02",
	"2006-01-02 15:04",
	"2006-01-02 15:04:05",
	"2006-01-02T15:04",
	"2006-01-02T15:04:05",
	"15:04",
	"15:04:05",
}

// checkTimeSpec accepts the time forms journalctl and friends take
// (systemd.time(7)): now, today, yesterday, tomorrow; @EPOCH; a relative
// offset such as -1h or +30min; "1 hour ago"; and absolute dates and times
// such as 2026-11-25, "2026-11-25 10:00" or 10:00:00, optionally with UTC.
func checkTimeSpec(s string) string {
	if timeSpecOK(s) {
		return ""
	}
	return fmt.Sprintf("%q is not a time (use today, yesterday, \"1 hour ago\", -2h, \"2026-11-25 10:00\" or 10:00)", s)
}

func timeSpecOK(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	switch s {
	case "now", "today", "yesterday", "tomorrow":
		return true
	}
	if strings.HasPrefix(s, "@") {
		return isDigits(s[1:]) && len(s) <= 12
	}
	if s[0] == '-' || s[0] == '+' {
		_, err := parseDuration(s[1:], false)
		return err == nil
	}
	if rest, ok := strings.CutSuffix(s, " ago"); ok {
		_, err := parseDuration(rest, false)
		return err == nil
	}
	t := strings.TrimSuffix(s, " UTC")
	for _, layout := range timeLayouts {
		if _, err := time.Parse(layout, t); err == nil {
			return true
		}
	}
	return false
}
