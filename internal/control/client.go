package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// Call sends one request to the daemon at socket and returns its response.
func Call(socket string, req Request, timeout time.Duration) (*Response, error) {
	c, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return nil, dialError(socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", socket, err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return nil, fmt.Errorf("control socket %s: no answer: %w", socket, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("control socket %s: bad answer: %w", socket, err)
	}
	if !resp.OK {
		return &resp, fmt.Errorf("daemon: %s", resp.Error)
	}
	return &resp, nil
}

// GetStatus asks the daemon for its status.
func GetStatus(socket string, timeout time.Duration) (*Status, error) {
	resp, err := Call(socket, Request{Cmd: "status"}, timeout)
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, errors.New("daemon answered without a status")
	}
	return resp.Status, nil
}

func dialError(socket string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no hadirector daemon answers on %s (is it running? pass --socket if it uses another path)", socket)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: permission denied (the control socket is root's; use sudo)", socket)
	}
	return fmt.Errorf("control socket %s: %w", socket, err)
}
