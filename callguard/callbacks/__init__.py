"""The call-back loop, pure core: who is free, who is picked, the per-call state machine,
and detection of the call-back on the AMI stream. No I/O and no clock here: times are passed in.
The wiring (store rows, CRM calls, the AMI feed, the CLI) lives elsewhere and drives these parts."""
