/// A table of at most `capacity` entries kept in least-recently-used order: lookup, insert, touch (make most
/// recent), remove and "remove the least recent" all cost O(1). Per-client state of a public service (rate limits,
/// reply budgets) lives in one, so its memory has a hard cap whatever the clients do, and expiry looks only at
/// the oldest entry instead of scanning the table.
public struct LRUTable<Key: Hashable, Value> {
    private struct Node {
        var key: Key
        var value: Value
        var older: Int32
        var newer: Int32
    }

    public let capacity: Int
    private var index: [Key: Int32] = [:]
    private var nodes: [Node] = []
    private var freeList: [Int32] = []
    /// The least and the most recently used entry (-1: empty).
    private var oldest: Int32 = -1
    private var newest: Int32 = -1

    public init(capacity: Int) {
        precondition(capacity > 0, "an LRU table needs room for one entry")
        self.capacity = capacity
    }

    public var count: Int { index.count }
    public var isFull: Bool { index.count >= capacity }

    public subscript(key: Key) -> Value? {
        guard let slot = index[key] else { return nil }
        return nodes[Int(slot)].value
    }

    /// The least recently used entry.
    public var leastRecent: (key: Key, value: Value)? {
        guard oldest >= 0 else { return nil }
        let node = nodes[Int(oldest)]
        return (node.key, node.value)
    }

    /// Changes an entry's value in place without changing its place in the order.
    public mutating func update(_ key: Key, _ body: (inout Value) -> Void) {
        guard let slot = index[key] else { return }
        body(&nodes[Int(slot)].value)
    }

    /// Stores `value` under `key` as the most recent entry. When the table is full and `key` is new, the least
    /// recent entry makes room and is returned.
    @discardableResult
    public mutating func set(_ key: Key, _ value: Value) -> (key: Key, value: Value)? {
        if let slot = index[key] {
            nodes[Int(slot)].value = value
            moveToNewest(slot)
            return nil
        }
        var evicted: (key: Key, value: Value)?
        if index.count >= capacity { evicted = removeLeastRecent() }
        let node = Node(key: key, value: value, older: newest, newer: -1)
        let slot: Int32
        if let reused = freeList.popLast() {
            slot = reused
            nodes[Int(slot)] = node
        } else {
            slot = Int32(nodes.count)
            nodes.append(node)
        }
        if newest >= 0 { nodes[Int(newest)].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
        index[key] = slot
        return evicted
    }

    /// Makes `key` the most recent entry.
    public mutating func touch(_ key: Key) {
        if let slot = index[key] { moveToNewest(slot) }
    }

    @discardableResult
    public mutating func remove(_ key: Key) -> Value? {
        guard let slot = index.removeValue(forKey: key) else { return nil }
        unlink(slot)
        freeList.append(slot)
        return nodes[Int(slot)].value
    }

    @discardableResult
    public mutating func removeLeastRecent() -> (key: Key, value: Value)? {
        guard oldest >= 0 else { return nil }
        let node = nodes[Int(oldest)]
        remove(node.key)
        return (node.key, node.value)
    }

    private mutating func unlink(_ slot: Int32) {
        let node = nodes[Int(slot)]
        if node.older >= 0 { nodes[Int(node.older)].newer = node.newer } else { oldest = node.newer }
        if node.newer >= 0 { nodes[Int(node.newer)].older = node.older } else { newest = node.older }
    }

    private mutating func moveToNewest(_ slot: Int32) {
        guard slot != newest else { return }
        unlink(slot)
        nodes[Int(slot)].older = newest
        nodes[Int(slot)].newer = -1
        if newest >= 0 { nodes[Int(newest)].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}
