// Compiles against the published package (exports + generated types) the way
// an app would use it; `npm test` type-checks this file, it never runs.
import { start, createClient, type Options, type Client } from 'skewless-client';
import { start as autoStart } from 'skewless-client/auto';

const options: Options = { policy: 'prompt', pollInterval: 30_000, hiddenDelay: 5_000, cssSwap: true };
const skewless: Client = start(options);
autoStart().configure({ policy: 'when-hidden' });

const release: string | null = skewless.release;
const current: string | null = skewless.current;
const clientId: string = skewless.clientId;
void release;
void current;
void clientId;

skewless.on('update-available', ({ current, apply }) => {
  const next: string = current;
  void next;
  const applied: boolean = apply();
  void applied;
});
skewless.on('update-required', ({ reason }) => {
  const why: 'release' | 'schema' = reason;
  void why;
});
skewless.on('reloading', ({ reason }) => void reason);
skewless.on('chunk-error', ({ willReload, url }) => void [willReload, url]);
skewless.on('css-swapped', ({ from, to }) => void [from, to]);

skewless.onBeforeReload(() => ({ draft: 'text' }));
const restored = skewless.restoredState() as { draft: string } | undefined;
void restored;

void skewless.check().then((state) => state?.generation);
void skewless.migrateStorage({
  version: 2,
  migrations: {
    2: (storage) => storage.setItem('k', 'v'),
  },
}).then(({ migrated, newer }) => [migrated, newer]);

createClient({ stream: false }, { load: () => {} }).stop();

// @ts-expect-error unknown event names are rejected
skewless.on('update', () => {});
// @ts-expect-error unknown policies are rejected
start({ policy: 'sometimes' });
