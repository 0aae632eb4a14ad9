"""The IO shell: trio tasks around the core, the gRPC link, the control socket and systemd."""
