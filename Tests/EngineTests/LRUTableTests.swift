import PortsweepEngine
import Testing

@Suite struct LRUTableTests {
    @Test func keepsAtMostItsCapacityAndEvictsTheLeastRecent() {
        var table = LRUTable<Int, String>(capacity: 3)
        for key in 1...3 { #expect(table.set(key, "\(key)") == nil) }
        table.touch(1)  // order, oldest first: 2, 3, 1
        let evicted = table.set(4, "4")
        #expect(evicted?.key == 2)
        #expect(table.count == 3 && table[2] == nil && table[1] == "1")
        #expect(table.leastRecent?.key == 3)
        table.update(3) { $0 = "three" }  // a change in place keeps the order
        #expect(table.leastRecent?.key == 3 && table[3] == "three")
        #expect(table.remove(3) == "three")
        #expect(table.removeLeastRecent()?.key == 1)
        #expect(table.removeLeastRecent()?.key == 4)
        #expect(table.removeLeastRecent() == nil && table.count == 0)
        // Slots are reused after removal.
        for key in 10...12 { table.set(key, "x") }
        #expect(table.count == 3 && table.leastRecent?.key == 10)
    }
}
