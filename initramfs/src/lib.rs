//! Builds the guest's initramfs: a cpio newc archive holding the agent as
//! `/init` plus extra files (schedulers and their shared-library closure),
//! compressed, and cached by content hash.
//!
//! It knows nothing of VMs or the protocol; it only turns files into an
//! archive.
