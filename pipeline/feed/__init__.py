"""The feed process: owns one exchange's sockets, the clock and its board rows."""
