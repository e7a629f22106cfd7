/**
 * A rate-limit middleware for Express-style servers (also plain
 * `http.createServer` handlers), written against minimal structural types:
 * no dependency on express.
 *
 * @module
 */

import type { CheckOptions, Client, Decision } from "./client";

/** The request as the middleware needs it: nothing (your `subject` function reads what it wants). */
export type RequestLike = object;

/** What the middleware needs of a response (Node's `http.ServerResponse` and express's fit). */
export interface ResponseLike {
  /** Set to 429 when denied. */
  statusCode: number;
  /** Sets `Retry-After` and `Content-Type` when denied. */
  setHeader(name: string, value: string | number): unknown;
  /** Ends the response when denied. */
  end(body?: string): unknown;
}

/** Express's `next`: called without an argument to continue, with one to fail. */
export type NextLike = (error?: unknown) => void;

/** Options of {@link rateLimitMiddleware}. */
export interface RateLimitMiddlewareOptions<Req extends RequestLike> extends Omit<CheckOptions, "peek"> {
  /** What is limited for this request, e.g. `(req) => "user:" + req.user.id` or the client's IP. */
  subject: (req: Req) => string;
  /** On an error from coord: `true` lets the request through, `false` (default) passes the error to `next`. */
  failOpen?: boolean;
  /** Called with each decision (for logs or metrics). */
  onDecision?: (req: Req, decision: Decision) => void;
}

/**
 * A middleware that checks each request against coord and answers 429 Too
 * Many Requests with a `Retry-After` header (seconds, rounded up) when
 * denied.
 *
 * ```ts
 * app.use(rateLimitMiddleware(coord, { policy: "api", subject: (req) => req.ip }));
 * ```
 */
export function rateLimitMiddleware<Req extends RequestLike = RequestLike>(
  client: Client,
  options: RateLimitMiddlewareOptions<Req>,
): (req: Req, res: ResponseLike, next: NextLike) => void {
  const { subject, failOpen = false, onDecision, ...check } = options;
  return (req, res, next) => {
    let key: string;
    try {
      key = subject(req);
    } catch (e) {
      next(e);
      return;
    }
    client.check(key, check).then(
      (decision) => {
        onDecision?.(req, decision);
        if (decision.allowed) {
          next();
          return;
        }
        res.statusCode = 429;
        if (decision.retryAfterMs !== null) res.setHeader("Retry-After", Math.max(1, Math.ceil(decision.retryAfterMs / 1000)));
        res.setHeader("Content-Type", "text/plain; charset=utf-8");
        res.end("Too Many Requests\n");
      },
      (error: unknown) => (failOpen ? next() : next(error)),
    );
  };
}
