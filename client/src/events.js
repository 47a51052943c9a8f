/**
 * A tiny typed event emitter: the client's only way of telling the app
 * what it decided.
 */

/**
 * @template {Record<string, any>} M
 * @typedef {{
 *   on<K extends keyof M & string>(type: K, fn: (detail: M[K]) => void): () => void,
 *   emit<K extends keyof M & string>(type: K, detail: M[K]): void
 * }} Emitter
 */

/**
 * @template {Record<string, any>} M
 * @returns {Emitter<M>}
 */
export function createEmitter() {
  /** @type {Map<string, Set<(detail: any) => void>>} */
  const listeners = new Map();
  return {
    on(type, fn) {
      let set = listeners.get(type);
      if (!set) listeners.set(type, (set = new Set()));
      set.add(fn);
      return () => {
        set.delete(fn);
      };
    },
    emit(type, detail) {
      for (const fn of [...(listeners.get(type) || [])]) {
        // One faulty listener must not stop the others nor the client's own
        // work (a reload that follows an event, for instance).
        try {
          fn(detail);
        } catch (error) {
          setTimeout(() => {
            throw error;
          });
        }
      }
    },
  };
}
