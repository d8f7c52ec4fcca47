"""What every part of acl-tf shares and that needs no TensorFlow: the error classes, atomic file
writes and the run-directory contract."""
