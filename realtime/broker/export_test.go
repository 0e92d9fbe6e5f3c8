package broker

// KeySlot is keySlot, for the tests of package broker_test.
var KeySlot = keySlot
