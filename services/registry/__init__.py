"""The registry service: chutes, images, shares, bounties, rolling updates, hf_info and warmup."""
