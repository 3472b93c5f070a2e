/** The generated messages and service descriptors of the `interlock.v1` API. */

export * from "./gen/interlock/v1/agents_pb.js";
export * from "./gen/interlock/v1/compute_pb.js";
export * from "./gen/interlock/v1/conversations_pb.js";
export * from "./gen/interlock/v1/events_pb.js";
export * from "./gen/interlock/v1/integrations_pb.js";
export * from "./gen/interlock/v1/ledger_pb.js";
export * from "./gen/interlock/v1/router_pb.js";
export * from "./gen/interlock/v1/sandboxes_pb.js";
