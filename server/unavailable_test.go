package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
)

type sqlStateErr string

func (e sqlStateErr) Error() string    { return "pg error " + string(e) }
func (e sqlStateErr) SQLState() string { return string(e) }

func TestDatabaseDown(t *testing.T) {
	down := []error{
		fmt.Errorf("reading the session: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}),
		fmt.Errorf("reading the credential: %w", io.ErrUnexpectedEOF),
		fmt.Errorf("x: %w", sqlStateErr("57P01")),
		fmt.Errorf("x: %w", sqlStateErr("08006")),
		errors.New("failed to connect to `user=postgres database=x`: dial error"),
	}
	for _, err := range down {
		if !databaseDown(err) {
			t.Errorf("not recognised as the database being down: %v", err)
		}
	}
	up := []error{
		errors.New("opening the cached access token: message authentication failed"),
		fmt.Errorf("x: %w", sqlStateErr("23505")),
	}
	for _, err := range up {
		if databaseDown(err) {
			t.Errorf("taken for the database being down: %v", err)
		}
	}
}
