"""What the run-time commands do, each from one options object: `process`, `live` and `inspect` (cli.py only reads
the options and calls one of these), and the robot additions they share (robotics.py). This is the one room that
wires sources, the frame method and sinks together."""
