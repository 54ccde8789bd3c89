// Who this tab is to the others: a name and a colour, kept in localStorage so a reload
// keeps them.

const COLORS = ['#e11d48', '#ea580c', '#ca8a04', '#16a34a', '#0891b2', '#2563eb', '#9333ea', '#db2777']
const ANIMALS = ['Otter', 'Heron', 'Lynx', 'Badger', 'Falcon', 'Marten', 'Ibex', 'Wren']

export interface Identity {
  name: string
  color: string
}

export function randomIdentity(random: () => number = Math.random): Identity {
  const pick = <T,>(list: readonly T[]): T => list[Math.floor(random() * list.length) % list.length] as T
  return { name: `${pick(ANIMALS)} ${Math.floor(random() * 90) + 10}`, color: pick(COLORS) }
}

export function loadIdentity(storage: Storage | undefined): Identity {
  try {
    const saved = storage?.getItem('chorus.identity')
    if (saved) {
      const v: unknown = JSON.parse(saved)
      if (v && typeof v === 'object' && 'name' in v && 'color' in v &&
          typeof v.name === 'string' && typeof v.color === 'string' &&
          v.name.length > 0 && v.name.length <= 64 && /^#[0-9a-f]{6}$/i.test(v.color)) {
        return { name: v.name, color: v.color }
      }
    }
  } catch {
    // A broken entry: start over.
  }
  const fresh = randomIdentity()
  try {
    storage?.setItem('chorus.identity', JSON.stringify(fresh))
  } catch {
    // Storage refused (private mode): the identity lasts this page.
  }
  return fresh
}
