"""The PBX sources: AMI and ARI clients and what their events mean as channel events."""
