// Command peerrelay lets a test speak to a unix socket as another account.
// Started as that account, it listens on -listen and copies every
// connection to a new connection of its own to -target, both ways, so the
// server at -target sees this process's credentials (SO_PEERCRED) and
// exactly the bytes the test sent. It stops when its stdin closes.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
)

func main() {
	listen := flag.String("listen", "", "socket to create and accept on")
	target := flag.String("target", "", "socket to connect every accepted connection to")
	flag.Parse()
	ln, err := net.Listen("unix", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.Chmod(*listen, 0o666); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		ln.Close()
	}()
	fmt.Println("ready")
	var wg sync.WaitGroup
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			relay(c, *target)
		}()
	}
	wg.Wait()
}

// relay copies c to a new connection to target and back until either side
// closes.
func relay(c net.Conn, target string) {
	defer c.Close()
	up, err := net.Dial("unix", target)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); up.(*net.UnixConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); c.(*net.UnixConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}
