module github.com/hadirector/hadirector

go 1.26.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/moby/ipvs v1.1.0
	github.com/pelletier/go-toml/v2 v2.4.3
	github.com/vishvananda/netlink v1.3.1
	github.com/vishvananda/netns v0.0.5
	golang.org/x/sys v0.49.0
)

require github.com/sirupsen/logrus v1.9.0 // indirect
