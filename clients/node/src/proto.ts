/**
 * The gRPC services, loaded at run time from the `.proto` files shipped in
 * the package (`proto/`), typed by the interfaces generated into
 * `src/generated` by `proto-loader-gen-types`.
 *
 * @internal
 * @module
 */

import * as path from "path";
import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";

import type { ProtoGrpcType as LockProto } from "./generated/lock";
import type { ProtoGrpcType as SemaphoreProto } from "./generated/semaphore";
import type { ProtoGrpcType as ElectionProto } from "./generated/election";
import type { ProtoGrpcType as RateLimitProto } from "./generated/ratelimit";
import type { ProtoGrpcType as LeaderboardProto } from "./generated/leaderboard";
import type { ProtoGrpcType as PubSubProto } from "./generated/pubsub";
import type { LockServiceClient } from "./generated/coord/v1/LockService";
import type { SemaphoreServiceClient } from "./generated/coord/v1/SemaphoreService";
import type { ElectionServiceClient } from "./generated/coord/v1/ElectionService";
import type { RateLimitServiceClient } from "./generated/coord/v1/RateLimitService";
import type { LeaderboardServiceClient } from "./generated/coord/v1/LeaderboardService";
import type { PubSubServiceClient } from "./generated/coord/v1/PubSubService";

/** Where the package's copy of coord's protos is (`<package>/proto`). */
export const PROTO_DIR = path.resolve(__dirname, "..", "proto");

const FILES = ["lock", "semaphore", "election", "ratelimit", "leaderboard", "pubsub"].map((f) => `coord/v1/${f}.proto`);

type Package = LockProto & SemaphoreProto & ElectionProto & RateLimitProto & LeaderboardProto & PubSubProto;
type Services = Package["coord"]["v1"];

let loaded: Services | undefined;

/** The service constructors (loaded once). */
export function services(): Services {
  if (!loaded) {
    const definition = loader.loadSync(FILES, {
      includeDirs: [PROTO_DIR],
      // int64 as decimal strings: JavaScript numbers lose precision past 2^53.
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    loaded = (grpc.loadPackageDefinition(definition) as unknown as Package).coord.v1;
  }
  return loaded;
}

/** The stubs of every service on one endpoint's channel. */
export interface Stubs {
  readonly endpoint: string;
  readonly channel: grpc.Channel;
  readonly locks: LockServiceClient;
  readonly semaphores: SemaphoreServiceClient;
  readonly elections: ElectionServiceClient;
  readonly rateLimits: RateLimitServiceClient;
  readonly leaderboards: LeaderboardServiceClient;
  readonly pubsub: PubSubServiceClient;
}

/** Stubs sharing one channel to `endpoint`. */
export function stubs(endpoint: string, credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions): Stubs {
  const s = services();
  const channel = new grpc.Channel(endpoint, credentials, options);
  const over = { ...options, channelOverride: channel };
  return {
    endpoint,
    channel,
    locks: new s.LockService(endpoint, credentials, over),
    semaphores: new s.SemaphoreService(endpoint, credentials, over),
    elections: new s.ElectionService(endpoint, credentials, over),
    rateLimits: new s.RateLimitService(endpoint, credentials, over),
    leaderboards: new s.LeaderboardService(endpoint, credentials, over),
    pubsub: new s.PubSubService(endpoint, credentials, over),
  };
}
