/**
 * What runs cost: ledger entries one by one and usage added up by end user,
 * agent, run, provider or UTC day.
 *
 * With the sandbox API key a call reads that sandbox's ledger; with
 * `sandboxId` it reads any sandbox's with the operator key. Costs are US
 * dollars from the daemon's versioned price tables, not a provider's invoice.
 */

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";

import type { KeySource } from "./auth.js";
import { choice } from "./choice.js";
import {
  Ledger as LedgerService,
  type LedgerEntry,
  LedgerEntryKind,
  type ListLedgerEntriesResponse,
  type SummarizeUsageResponse,
  UsageGroupBy,
  type UsageSummary,
} from "./gen/interlock/v1/ledger_pb.js";
import type { CallOptions } from "./options.js";
import { connectTransport } from "./internal.js";
import type { ConnectTransport } from "./transport.js";
import { unary } from "./unary.js";

/** What a summary adds up by (`"day"` is the UTC day, its key `YYYY-MM-DD`). */
export type UsageGroupName = "endUser" | "agent" | "run" | "provider" | "day";

const GROUPS: Record<UsageGroupName, UsageGroupBy> = {
  endUser: UsageGroupBy.END_USER,
  agent: UsageGroupBy.AGENT,
  run: UsageGroupBy.RUN,
  provider: UsageGroupBy.PROVIDER,
  day: UsageGroupBy.DAY,
};

/** What a ledger entry bills. */
export type LedgerKindName = "tokens" | "compute";

const KINDS: Record<LedgerKindName, LedgerEntryKind> = {
  tokens: LedgerEntryKind.TOKENS,
  compute: LedgerEntryKind.COMPUTE,
};

/** Which entries a call covers: every field given must match. */
export interface LedgerFilterInit {
  runId?: string;
  endUserId?: string;
  /** A saved agent's slug. */
  agent?: string;
  /** An agent or compute provider, e.g. `"anthropic"`. */
  provider?: string;
  /** `"tokens"` or `"compute"`; unset for both. */
  kind?: LedgerKindName;
  /** Entries written at or after this time. */
  since?: Date;
  /** Entries written before this time. */
  until?: Date;
  /** Another sandbox's ledger, read with the operator key; unset for the API key's own. */
  sandboxId?: string;
}

/** A page of a listing or a summary. */
export interface PageInit {
  /** 1-1000; unset means 100. */
  pageSize?: number;
  /** A previous page's `nextPageToken` (with the same filter); unset for the first page. */
  pageToken?: string;
}

/** Every group of a summary, with the total of every matching entry. */
export interface UsageSummaries {
  summaries: UsageSummary[];
  total: UsageSummary | undefined;
}

export class Ledger {
  readonly #stub: Client<typeof LedgerService>;
  readonly #apiKey: KeySource;
  readonly #operatorKey: KeySource;

  constructor(transport: ConnectTransport, apiKey: KeySource, operatorKey: KeySource) {
    this.#stub = createClient(LedgerService, connectTransport(transport));
    this.#apiKey = apiKey;
    this.#operatorKey = operatorKey;
  }

  /** The API key reads its own sandbox; naming a sandbox takes the operator key. */
  #key(sandboxId: string | undefined): KeySource {
    return sandboxId ? this.#operatorKey : this.#apiKey;
  }

  /** One page of ledger entries, newest first; see {@link listAll} for all of them. */
  async list(
    request: LedgerFilterInit & PageInit = {},
    options: CallOptions = {},
  ): Promise<ListLedgerEntriesResponse> {
    const message = {
      sandboxId: request.sandboxId,
      filter: filterOf(request),
      pageSize: request.pageSize,
      pageToken: request.pageToken,
    };
    return unary(this.#key(request.sandboxId), options, (o) => this.#stub.listLedgerEntries(message, o));
  }

  /** Every matching entry, newest first, fetching pages as the iteration needs them. */
  async *listAll(
    request: LedgerFilterInit & { pageSize?: number } = {},
    options: CallOptions = {},
  ): AsyncGenerator<LedgerEntry, void> {
    let pageToken = "";
    do {
      const page = await this.list({ ...request, pageToken }, options);
      yield* page.entries;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /**
   * One page of usage and cost per group, by key, with the total of every
   * matching entry; see {@link summarizeAll} for every group at once.
   */
  async summarize(
    request: LedgerFilterInit & PageInit & { by: UsageGroupName },
    options: CallOptions = {},
  ): Promise<SummarizeUsageResponse> {
    const message = {
      sandboxId: request.sandboxId,
      filter: filterOf(request),
      groupBy: choice(GROUPS, request.by, "by"),
      pageSize: request.pageSize,
      pageToken: request.pageToken,
    };
    return unary(this.#key(request.sandboxId), options, (o) => this.#stub.summarizeUsage(message, o));
  }

  /** Every group of a summary (fetching every page) and the total. */
  async summarizeAll(
    request: LedgerFilterInit & { by: UsageGroupName; pageSize?: number },
    options: CallOptions = {},
  ): Promise<UsageSummaries> {
    const result: UsageSummaries = { summaries: [], total: undefined };
    let pageToken = "";
    do {
      const page = await this.summarize({ ...request, pageToken }, options);
      result.summaries.push(...page.summaries);
      result.total = page.total;
      pageToken = page.nextPageToken;
    } while (pageToken);
    return result;
  }
}

function filterOf(request: LedgerFilterInit) {
  return {
    runId: request.runId,
    endUserId: request.endUserId,
    agent: request.agent,
    provider: request.provider,
    kind: request.kind === undefined ? LedgerEntryKind.UNSPECIFIED : choice(KINDS, request.kind, "kind"),
    startTime: request.since && timestampFromDate(request.since),
    endTime: request.until && timestampFromDate(request.until),
  };
}
