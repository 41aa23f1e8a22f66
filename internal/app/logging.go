package app

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/tokenstore/tokenstore/internal/settings"
)

// NewLogger is the process's logger as s asks for it (LOG_LEVEL,
// LOG_FORMAT), writing to the buffered stderr (logWriter); it becomes
// slog's default. Call FlushLogs before the process exits.
func NewLogger(s *settings.Settings) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(s.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	w := stderrLog()
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if s.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	l := slog.New(h)
	slog.SetDefault(l)
	return l
}

// logFlushInterval bounds how long a log line waits in the buffer.
const logFlushInterval = 200 * time.Millisecond

// logWriter is the buffered writer behind the logger: lines go into a
// 64 KiB buffer under a mutex (slog writes each record with one Write, so
// lines never interleave) and reach stderr when the buffer fills, every
// logFlushInterval, and when main returns (FlushLogs). A burst of request
// lines thus costs one write syscall instead of one each. A crash (SIGKILL,
// a panic outside the main goroutine, the OOM killer) may lose the last
// ~200 ms of lines; audit events are in the database regardless.
type logWriter struct {
	mu  sync.Mutex
	out io.Writer
	buf *bufio.Writer
}

var (
	stderrLogOnce sync.Once
	stderrLogW    *logWriter
)

// stderrLog is the process's one buffered stderr writer; the first call
// starts its flusher.
func stderrLog() *logWriter {
	stderrLogOnce.Do(func() {
		stderrLogW = &logWriter{out: os.Stderr, buf: bufio.NewWriterSize(os.Stderr, 64<<10)}
		go func() {
			for range time.Tick(logFlushInterval) {
				_ = stderrLogW.Flush()
			}
		}()
	})
	return stderrLogW
}

// FlushLogs writes out what the logger buffered; main calls it before the
// process exits.
func FlushLogs() {
	if stderrLogW != nil {
		_ = stderrLogW.Flush()
	}
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.buf.Write(p)
	if err != nil {
		// bufio's errors are sticky; start afresh so that one failed write
		// to stderr does not silence the logger for good.
		l.buf.Reset(l.out)
	}
	return n, err
}

// Flush writes out the buffered lines.
func (l *logWriter) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Buffered() == 0 {
		return nil
	}
	err := l.buf.Flush()
	if err != nil {
		l.buf.Reset(l.out)
	}
	return err
}
