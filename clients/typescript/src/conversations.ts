/**
 * Reading and deleting an end user's conversations (sandbox API key). Every
 * call names the end user: conversations are private to one, and the router
 * answers NOT_FOUND for a session that belongs to someone else.
 */

import type { Client } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";

import type { KeySource } from "./auth.js";
import {
  type Conversation,
  Conversations as ConversationsService,
  type GetConversationResponse,
  type ListConversationsResponse,
} from "./gen/interlock/v1/conversations_pb.js";
import type { CallOptions } from "./options.js";
import { connectTransport } from "./internal.js";
import type { ConnectTransport } from "./transport.js";
import { unary } from "./unary.js";

export class Conversations {
  readonly #stub: Client<typeof ConversationsService>;
  readonly #key: KeySource;

  constructor(transport: ConnectTransport, key: KeySource) {
    this.#stub = createClient(ConversationsService, connectTransport(transport));
    this.#key = key;
  }

  /** One page of the end user's conversations, most recently active first. */
  list(
    request: { endUserId: string; pageSize?: number; pageToken?: string },
    options: CallOptions = {},
  ): Promise<ListConversationsResponse> {
    return unary(this.#key, options, (o) => this.#stub.listConversations(request, o));
  }

  /** Every conversation of the end user, fetching pages as needed. */
  async *listAll(
    request: { endUserId: string; pageSize?: number },
    options: CallOptions = {},
  ): AsyncGenerator<Conversation, void> {
    let pageToken = "";
    do {
      const page = await this.list({ ...request, pageToken }, options);
      yield* page.conversations;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** The conversation's summary and one page of its entries, oldest first. */
  get(
    request: { endUserId: string; sessionId: string; pageSize?: number; pageToken?: string },
    options: CallOptions = {},
  ): Promise<GetConversationResponse> {
    return unary(this.#key, options, (o) => this.#stub.getConversation(request, o));
  }

  /** Delete a conversation and everything stored for it. */
  async delete(
    request: { endUserId: string; sessionId: string },
    options: CallOptions = {},
  ): Promise<void> {
    await unary(this.#key, options, (o) => this.#stub.deleteConversation(request, o));
  }
}
