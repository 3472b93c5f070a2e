"""Generated protobuf and gRPC modules of the interlock.v1 API (see proto/)."""
