"""Click-to-call: checks, the Originate over AMI or ARI, relays between PBXs."""
