package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/tokenstore/tokenstore/internal/fault"
)

// databaseDown recognises an error that means the database cannot be
// reached right now (refused or dropped connections, a server shutting
// down), as opposed to a bug or a bad row. Such a request is answered 503
// database_unavailable, which a client may retry, rather than 500.
//
// It looks only at standard-library error types and at the SQLSTATE a
// driver error reports through a method, so that this package does not
// import a database driver (the store is reached through its interface).
func databaseDown(err error) bool {
	var op *net.OpError
	var sqlState interface{ SQLState() string }
	switch {
	case errors.As(err, &op),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return true
	case errors.As(err, &sqlState):
		// Class 08: connection exception; 57P01-57P03: admin or crash
		// shutdown, cannot connect now.
		st := sqlState.SQLState()
		return strings.HasPrefix(st, "08") || st == "57P01" || st == "57P02" || st == "57P03"
	}
	// pgx reports a connection it closed after a failure this way, without
	// a typed cause.
	return strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "failed to connect")
}

// errDatabaseDown is the answer while the database is unreachable.
var errDatabaseDown = &fault.Error{Status: http.StatusServiceUnavailable, Code: "database_unavailable", OAuth: "temporarily_unavailable",
	Message: "The database could not be reached; nothing was changed, try again shortly."}
